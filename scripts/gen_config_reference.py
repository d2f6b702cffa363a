"""Print the configuration reference (docs/configuration.md) generated from the config models."""

from jupyter_modeldeploy.config.reference import render

if __name__ == "__main__":
    print(render(), end="")
