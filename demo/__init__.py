"""A local demo of the connector that needs no commercetools or Klaviyo account."""
