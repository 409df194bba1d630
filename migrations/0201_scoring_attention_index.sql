-- The dashboard's "needs attention" view: latest detractors and service requests, newest first.
CREATE INDEX scoring_answers_attention ON scoring_answers (submitted_at DESC)
    WHERE is_current AND (category = 'detractor' OR service_request);
