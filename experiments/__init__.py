"""One run: validate -> load -> adapt -> train -> evaluate -> measure -> record."""
