"""`make bench`: the gateway measured beside a direct connection and peer gateways."""
