"""The pure state machines the workflows drive.

Nothing here imports Temporal, reads a clock or draws a random number: time
comes in as an argument (the workflow passes ``workflow.now()``), so every
function is deterministic and unit-tested without a server.
"""
