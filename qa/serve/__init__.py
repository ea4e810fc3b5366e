"""Serving: the web app (`app`: create_app, serve), the REST API (`api`), the Gradio chat
(`ui`) and the OpenAI-compatible endpoint (`openai_api`).

Nothing heavy is imported here: FastAPI and Gradio load when `qa.serve.app` does.
"""

__all__: list[str] = []
