"""One module per pattern, server side and client side together, short enough to read whole."""
