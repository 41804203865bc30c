"""Capacity: per-host demand from measured use, headroom for a VM profile, and admission.

The inventory (inventory.py) says what each physical host holds; demand.py sums
the member VMs' minute-by-minute use per host so correlated peaks count;
placement.py turns host loads and a set of VMs to place into an allocation
offer.  None of them calls a host free on data it lacks.
"""
