"""What the management API, the dashboard and the command line share.

The command line edits the data directory while a broker may be running on
it; the API and the dashboard edit the same data inside the running broker.
The rules both kinds of edit must keep live here, once: how an API app is
created and checked (``apps``), how an edit reaches the database when no
broker is asked (``offline``), how a running broker learns of it
(``sync``), and where a running broker's admin data is (``store``).
Nothing here imports aiohttp or argparse, so the command line stays quick
to start and the API does not depend on it.
"""
