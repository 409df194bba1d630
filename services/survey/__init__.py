"""The survey page: b24-nps's own public page that asks the customer (docs/survey.md)."""
