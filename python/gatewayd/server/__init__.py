"""The data plane: the ASGI app and the request pipeline."""
