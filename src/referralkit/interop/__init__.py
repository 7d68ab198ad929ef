"""Exchange referrals with other systems.

- :mod:`referralkit.interop.fhir`: FHIR R4 Bundles in and out (the ``fhir`` extra validates
  them with ``fhir.resources``).
"""
