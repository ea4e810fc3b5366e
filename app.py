"""Start the chat UI, the REST API and the embed script on one port: `python app.py`.

Configured with QA_* environment variables (see qa/config.py). The address comes from HOST and
PORT, as on most hosting platforms (default 127.0.0.1:7860); `qa serve --host --port` is the
same with options.
"""

import os

from qa.config import Settings
from qa.serve.app import serve

if __name__ == "__main__":
    serve(Settings(), host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "7860")))
