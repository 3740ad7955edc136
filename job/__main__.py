"""`python -m job`: serve the job application on 0.0.0.0:$PORT."""

import uvicorn

from job.app import create_app
from shared.cli import startup


def main() -> None:
    settings = startup()
    uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
