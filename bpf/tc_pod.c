/* TC programs on the host side of every local pod interface.
 *
 * from_pod runs at the host veth's ingress (packets the pod sends), to_pod at
 * its egress (packets the node's stack delivers to the pod); lib/pod.h says
 * what both do to a packet. What from_pod lets through goes on by host routing
 * (lib/host_routing.h) where it applies, else by the node's routing table.
 */
#include "lib/common.h"
#include "lib/pod.h"
#include "lib/host_routing.h"

int from_pod(struct __sk_buff *skb)
{
	int ret = handle_pod_packet(skb, DIR_EGRESS, skb->ifindex, NULL);

	if (ret != TC_ACT_OK)
		return ret;
	return host_route_from_pod(skb);
}

int to_pod(struct __sk_buff *skb)
{
	return handle_pod_packet(skb, DIR_INGRESS, skb->ifindex, NULL);
}
