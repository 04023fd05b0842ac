"""Development tooling shared by tests, benchmarks and the demo: locating and booting the
ComfyUI host, running its server, and building tiny models from ComfyUI's own classes.
Never imported by the node pack, and never shipped (.comfyignore); its test-only nodes come
as a separate pack (test_pack/)."""
