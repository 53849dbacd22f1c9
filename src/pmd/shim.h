/* Things bindgen cannot see: macro constants built with RTE_BIT64 and the
 * thread-local rte_errno. Implemented in shim.c. */
#ifndef FLOWGATE_SHIM_H
#define FLOWGATE_SHIM_H
#include <stdint.h>

int fg_rte_errno(void);

/* rx/tx offload capability bits (RTE_ETH_*_OFFLOAD_*) */
extern const uint64_t FG_RX_OFFLOAD_IPV4_CKSUM;
extern const uint64_t FG_RX_OFFLOAD_SCATTER;
extern const uint64_t FG_RX_OFFLOAD_RSS_HASH;
extern const uint64_t FG_TX_OFFLOAD_MULTI_SEGS;
extern const uint64_t FG_TX_OFFLOAD_MBUF_FAST_FREE;
extern const uint64_t FG_TX_OFFLOAD_IPV4_CKSUM;
/* RSS hash field bits (RTE_ETH_RSS_*) */
extern const uint64_t FG_RSS_IPV4;
extern const uint64_t FG_RSS_NONFRAG_IPV4_TCP;
extern const uint64_t FG_RSS_NONFRAG_IPV4_UDP;
/* mbuf offload flags (RTE_MBUF_F_*) */
extern const uint64_t FG_MBUF_F_RX_RSS_HASH;
extern const uint64_t FG_MBUF_F_RX_IP_CKSUM_BAD;

#endif
