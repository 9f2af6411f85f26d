"""The investigator's console: web pages that answer "who authorised this?" and verify, in the
reader's own browser, what they show.

It is a client of the log (it reads through `affidavit.client.Client` with the auditor token the
investigator logs in with, and checks every checkpoint and proof as any client does), served on
its own (`affidavit console --server … --listen …`) or beside the log under `/console/`.

    sessions.py   logins: the auditor token held server-side behind an unguessable cookie
    reads.py      what each page shows, read from the log and verified (no HTML here)
    graph.py      an action's authority chain as a drawing (nodes, edges, what narrowed)
    app.py        the aiohttp application: routes, login, error pages, security headers
    cli.py        the `affidavit console` command
    templates/    the pages (Jinja2, autoescaped); static/ the style and verify.js, which
                  re-checks an action's entries, proofs and checkpoint with WebCrypto
"""
