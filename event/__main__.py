"""`python -m event`: serve the event application on 0.0.0.0:$PORT."""

from event.app import create_app
from shared.cli import command_line, serve

if __name__ == "__main__":
    command_line("python -m event", "Serve the event application (commercetools subscription deliveries at POST /, "
                 "GET /health, GET /metrics) on 0.0.0.0:$PORT.")
    serve(create_app)
