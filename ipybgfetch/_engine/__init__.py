"""The engine layer: the loop thread, transfers, the writer thread, the store and restore.

Owns all mutable download state. Imports only :mod:`ipybgfetch._http` and the small bottom
modules; reports upward through callbacks handed to it by the public objects.
"""
