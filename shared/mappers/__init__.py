"""Pure functions from commercetools resources (plain dicts) to Klaviyo payloads (plain dicts)."""
