"""The GPU collector: NVML samples on a thread of their own, exported as read."""
