"""The operator console's static files (HTML, CSS, JavaScript modules), served by the
admin API (gatewayd.admin.console) and shipped in the wheel beside the code."""
