// Per-cgroup accounting for hm-agent (agent/src/accounting): network bytes and packets
// of every socket in a watched cgroup (cgroup_skb ingress and egress programs the agent
// attaches to each Instance container's cgroup), and programs started in it (the
// sched_process_exec tracepoint, attached raw). Only cgroups the agent put in `watched` are
// counted, so the maps stay as small as the set of running containers.
//
// Built by agent/build.rs with `clang -O2 -g -target bpf` and embedded in hm-agent.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// Must match `NetCounters` in agent/src/accounting/bpf.rs.
struct net_counters {
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 tx_bytes;
	__u64 tx_packets;
};

// cgroup id (the inode of its cgroup v2 directory) -> 1, written by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} watched SEC(".maps");

// cgroup id -> traffic of its sockets, one slot per CPU (no atomics on the hot path).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct net_counters);
} net_by_cgroup SEC(".maps");

// cgroup id -> successful execve calls of its processes, one slot per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} execs_by_cgroup SEC(".maps");

static __always_inline struct net_counters *net_slot(__u64 id)
{
	struct net_counters *c = bpf_map_lookup_elem(&net_by_cgroup, &id);
	if (c)
		return c;
	struct net_counters zero = {};
	// Fails harmlessly when another CPU inserted it first; the lookup then finds it.
	bpf_map_update_elem(&net_by_cgroup, &id, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&net_by_cgroup, &id);
}

static __always_inline void count(struct __sk_buff *skb, int egress)
{
	__u64 id = bpf_skb_cgroup_id(skb);
	if (!bpf_map_lookup_elem(&watched, &id))
		return;
	struct net_counters *c = net_slot(id);
	if (!c)
		return;
	// skb->len is the whole IP packet: headers included.
	if (egress) {
		c->tx_bytes += skb->len;
		c->tx_packets += 1;
	} else {
		c->rx_bytes += skb->len;
		c->rx_packets += 1;
	}
}

// Returning 1 lets every packet through: these programs only count.
SEC("cgroup_skb/ingress")
int hm_count_ingress(struct __sk_buff *skb)
{
	count(skb, 0);
	return 1;
}

SEC("cgroup_skb/egress")
int hm_count_egress(struct __sk_buff *skb)
{
	count(skb, 1);
	return 1;
}

// A raw tracepoint: attached by name with bpf_raw_tracepoint_open, so it needs no
// tracefs mounted (hosts often have none), unlike a classic tracepoint.
SEC("raw_tracepoint/sched_process_exec")
int hm_count_exec(void *ctx)
{
	__u64 id = bpf_get_current_cgroup_id();
	if (!bpf_map_lookup_elem(&watched, &id))
		return 0;
	__u64 *n = bpf_map_lookup_elem(&execs_by_cgroup, &id);
	if (!n) {
		__u64 zero = 0;
		bpf_map_update_elem(&execs_by_cgroup, &id, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&execs_by_cgroup, &id);
		if (!n)
			return 0;
	}
	*n += 1;
	return 0;
}

// No GPL-only helper is called, so the project's own licence applies.
char LICENSE[] SEC("license") = "Apache-2.0";
