"""The PR monitor: durable's model story, runnable end to end.

A GitHub webhook reports a new pull request; a workflow creates a Slack channel
for it, posts there, and reminds the channel every day until the pull request
is closed or merged. Workers may crash or be redeployed at any moment: the
workflow resumes where it stopped and sends nothing twice.

Modules, in the order a request flows through them:

- ``webhook``: verify GitHub's signature and turn events into workflow starts
  and signals; framework-free, ``(headers, body) -> (status, json)``.
- ``app``: the same as a Flask app (the ``examples`` extra), a thin wrapper.
- ``workflow``: the workflow itself, a generator.
- ``activities``: the side effects (Slack and GitHub calls), each carrying
  durable's idempotency key.
- ``apis``: JSON over HTTP with ``urllib``, and which failures are worth a retry.
- ``config``: base URLs, tokens and the webhook secret, from the environment.
- ``model``: the pull request as the workflow sees it.
- ``standin``: a local stand-in for the Slack and GitHub APIs that records
  every call, for the demo and the tests.
- ``serving``: a stdlib HTTP server in a thread, for the webhook and the stand-in.

``durable demo`` runs all of it on the embedded Redis; README.md here says how
to run it against a real Redis, Slack and GitHub.
"""
