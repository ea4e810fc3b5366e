"""The index: its on-disk format (`format`), how it is built (`build`) and a loaded version
(`load`), with the approximate search (`ann`) and the page-cache helpers (`memory`) it uses.

Nothing heavy is imported here: `import qa.index.format` costs no FAISS and no torch.
"""

__all__: list[str] = []
