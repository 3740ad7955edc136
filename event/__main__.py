"""`python -m event`: serve the event application on 0.0.0.0:$PORT."""

from event.app import create_app
from shared.cli import serve

if __name__ == "__main__":
    serve(create_app)
