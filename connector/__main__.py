"""`python -m connector`: serve what `APP_TYPE` asks for (the container's entry point)."""

from connector.app import create_app
from shared.cli import serve

if __name__ == "__main__":
    serve(create_app)
