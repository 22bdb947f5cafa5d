"""Attaching programs to interfaces with TC clsact in direct-action mode.

Filters use a fixed priority and handle, so attaching again replaces the
program atomically (no window without a program) instead of stacking a second
filter behind the first.
"""
from __future__ import annotations

import errno

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

INGRESS = "ffff:fff2"  # packets the interface receives: from the pod, on a host veth
EGRESS = "ffff:fff3"   # packets the interface sends: to the pod
PRIO = 1


def attach(ipr: IPRoute, ifindex: int, parent: str, fd: int, name: str) -> None:
    try:
        ipr.tc("add", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
    ipr.tc("replace-filter", "bpf", ifindex, ":1", fd=fd, name=name, parent=parent,
           classid=1, direct_action=True, prio=PRIO)


def detach(ipr: IPRoute, ifindex: int) -> None:
    """Remove the clsact qdisc and with it every filter; absent is fine."""
    try:
        ipr.tc("del", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise


def attached_names(ipr: IPRoute, ifindex: int, parent: str) -> list[str]:
    """Names of the BPF programs attached at one hook, as the kernel reports them."""
    parent_id = int(parent.replace(":", ""), 16)
    names = []
    try:
        filters = ipr.get_filters(ifindex, parent=parent_id)
    except NetlinkError:
        return []
    for msg in filters:
        options = msg.get_attr("TCA_OPTIONS")
        if options is not None and options.get_attr("TCA_BPF_NAME"):
            names.append(options.get_attr("TCA_BPF_NAME"))
    return names
