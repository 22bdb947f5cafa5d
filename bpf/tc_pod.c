/* TC programs on the host side of every local pod interface.
 *
 * from_pod runs at the host veth's ingress (packets the pod sends), to_pod at
 * its egress (packets delivered to the pod); lib/pod.h says what both do to a
 * packet. Forwarding is left to the node's routing table.
 */
#include "lib/common.h"
#include "lib/pod.h"

int from_pod(struct __sk_buff *skb)
{
	return handle_pod_packet(skb, DIR_EGRESS, skb->ifindex);
}

int to_pod(struct __sk_buff *skb)
{
	return handle_pod_packet(skb, DIR_INGRESS, skb->ifindex);
}
