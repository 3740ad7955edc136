"""Self-hosting launcher: one container image, and `APP_TYPE` picks what it serves."""
