"""The dashboard: the fleet in a browser, served by the centre's HTTP process beside ``/api/v1``.

Server-rendered pages (Jinja2, autoescaped) over the same cores as the API, a sign-in with an API
token kept as a server-side session, CSRF on every form, operator actions through
:class:`~control_plane.commands.Commands`, and live numbers over server-sent events from one
publisher per process. :data:`pages.PAGES` is the table of pages; :class:`web.Dashboard` serves it.
"""
