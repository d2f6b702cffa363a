"""The JupyterHub share service: teammates get their own keys to deployments shared with them.

A Hub-managed service (`python -m jupyter_modeldeploy.hub_share`). A Hub user opens a deployment's
share page (`/services/modeldeploy-share/<owner>/<deployment>`), logs in through the Hub (OAuth), and
the service asks the owner's server for a personal key, naming the user and their Hub groups; the
owner's server checks the deployment's `share_with` and mints it. Every `--check-every` seconds the
service tells each running server which of its key holders are still in the Hub and in which groups,
so that leaving a shared group, or the Hub, revokes the keys within a minute.

`hub_config` writes the Hub configuration it needs.
"""
