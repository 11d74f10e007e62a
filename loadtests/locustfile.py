"""Locust traffic for rollback drills; the file itself lives in the package, so `gatewayd
drill` finds it wherever gatewayd is installed. Runs on its own as ever:

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 50 -t 60s
"""

from gatewayd.drill.locustfile import *  # noqa: F403
from gatewayd.drill.locustfile import GatewayUser  # noqa: F401 (locust collects the user class)
