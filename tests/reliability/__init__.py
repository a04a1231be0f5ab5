"""The reliability suite (issue #17): upgrades, kills and outages under a bounded load, with figures."""
