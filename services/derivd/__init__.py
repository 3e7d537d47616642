"""derivd: differentiation as a service.

Layers, each importing only those below it:
ops -> ir -> dsl / transforms / compile -> engines -> core -> gateway.
"""

__version__ = "0.1.0"
