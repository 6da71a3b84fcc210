"""The HTTP layer: the httpx client and ipybgfetch's own HTTP/1.1 transport.

Imports only the small bottom modules.
"""
