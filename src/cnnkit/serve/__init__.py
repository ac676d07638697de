"""``cnnkit serve``: a web playground on real cnnkit models (draw, photo, train, zoo, teach). Needs the ``serve``
extra: ``pip install 'cnnkit[serve]'``."""

from .app import create_app

__all__ = ["create_app"]
