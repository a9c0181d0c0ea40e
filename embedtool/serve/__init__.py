"""`embedtool serve`: a local web app to search, listen to and browse a workspace (``embedtool[serve]`` extra).

``create_app(workspace)`` (in :mod:`embedtool.serve.app`) builds the ASGI app; :mod:`embedtool.serve.library`
holds the workspace's artefacts open, :mod:`~embedtool.serve.media` streams library audio,
:mod:`~embedtool.serve.uploads` bounds uploaded queries, ``static/`` is the page.
"""
