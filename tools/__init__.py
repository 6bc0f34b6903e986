"""Built-in analysis tools, one module each (installed as ``quantorch.tools``)."""
