"""One module per check: ``evaluate`` turns numbers into a verdict (pure, so it can be
tested on scripted numbers) and ``run`` gathers the numbers from the path."""
