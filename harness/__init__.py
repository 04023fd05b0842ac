"""Development tooling shared by tests, benchmarks and the demo: locating and booting the
ComfyUI host, running its server, and building tiny models from ComfyUI's own classes.
Never imported by the node pack unless NEGGUIDE_TEST_NODES=1."""
