-- Dispatch: what the dashboard reads of the register (read module, docs/dashboard.md, Asked and
-- not answered): the requests sent, by when their first message went out (the "Asked" page's
-- dates), and a deal survey's request by its NPS deal (the all-ratings page's sent date).
CREATE INDEX dispatch_requests_sent ON dispatch_requests (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX dispatch_requests_nps_deal ON dispatch_requests (nps_deal_id)
    WHERE nps_deal_id IS NOT NULL;
