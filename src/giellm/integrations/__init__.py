"""giellm inside other tools: the spaCy pipeline component."""
