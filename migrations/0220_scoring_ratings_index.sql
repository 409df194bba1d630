-- The dashboard's all-ratings list: every current answer, newest first, in pages.
CREATE INDEX scoring_answers_ratings ON scoring_answers
    (submitted_at DESC, updated_at DESC, item_id DESC, answer_id) WHERE is_current;
