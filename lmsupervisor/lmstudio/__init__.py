"""The LM Studio adapter: finding the install, running `lms`, probing its HTTP server,
watching its processes. Everything that touches LM Studio lives here (lmstudio-facts.md)."""
