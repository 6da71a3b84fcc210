"""The Jupyter front: the ``%bgfetch`` magic and the anywidget panel.

Sits above the public objects and uses only what they offer.
"""
