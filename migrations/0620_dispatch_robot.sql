-- Dispatch: requests the portal's "Send NPS survey" robot asked for (docs/dispatch.md, The robot).
-- `robot_token` is the launch's event_token (its business process waits for the answer, sent
-- once the survey goes out or is skipped); `send_after` holds the robot's delay back: the first
-- message goes out no earlier.
ALTER TABLE dispatch_requests ADD COLUMN robot_token text;
ALTER TABLE dispatch_requests ADD COLUMN send_after timestamptz;
