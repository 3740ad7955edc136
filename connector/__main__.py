"""`python -m connector`: serve what `APP_TYPE` asks for (the container's entry point)."""

from connector.app import create_app
from shared.cli import command_line, serve

if __name__ == "__main__":
    command_line("python -m connector", "Serve the application APP_TYPE names on 0.0.0.0:$PORT: EVENT (deliveries), "
                 "BULK_IMPORT (imports), or, unset, both on one port. GET /health and GET /metrics in every mode.")
    serve(create_app)
