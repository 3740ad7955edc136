"""The event application: receives commercetools subscription deliveries and syncs them to Klaviyo."""
