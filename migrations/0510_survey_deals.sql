-- The survey page: a request may ask about an NPS deal (a deal survey's); its category_id is then
-- the deal survey's deal category and sku the deal survey's product.

ALTER TABLE survey_requests ADD COLUMN deal_id bigint;
