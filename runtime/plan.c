/* plan.c: the layout hash of a plan, recomputed from its tables (see refit_plan.h). */
#include <string.h>

#include "refit_plan.h"

#define MIX(h, w) ((h) = ((h) ^ (uint64_t)(w)) * 0x100000001b3ull)

/* 8-byte little-endian words, the last zero-padded, then the length */
static uint64_t mix_str(uint64_t h, const char *s)
{
  size_t n = strlen(s);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w = 0;
    for (size_t k = 0; k < 8 && i + k < n; k++)
      w |= (uint64_t)(unsigned char)s[i + k] << (8 * k);
    MIX(h, w);
  }
  MIX(h, n);
  return h;
}

uint64_t rf_plan_hash(const rf_plan *p)
{
  uint64_t h = 0xcbf29ce484222325ull;
  MIX(h, p->total_bytes);
  MIX(h, p->fsdp); MIX(h, p->dp_replicate); MIX(h, p->trainers); MIX(h, p->tp);
  MIX(h, p->ep); MIX(h, p->replicas); MIX(h, p->receivers); MIX(h, p->scale_fmt);
  for (uint32_t i = 0; i < p->n_src; i++) {
    const rf_src_tensor *t = &p->src[i];
    h = mix_str(h, t->name);
    MIX(h, t->rows); MIX(h, t->cols); MIX(h, t->shard_rows); MIX(h, t->shard);
    MIX(h, t->layer); MIX(h, t->dtype); MIX(h, t->travel); MIX(h, t->ndim);
    MIX(h, t->shape[0]); MIX(h, t->shape[1]); MIX(h, t->shape[2]);
  }
  for (uint32_t i = 0; i < p->n_dst; i++) {
    const rf_dst_tensor *t = &p->dst[i];
    h = mix_str(h, t->name);
    h = mix_str(h, t->aliases);
    MIX(h, t->shape[0]); MIX(h, t->shape[1]); MIX(h, t->shape[2]);
    MIX(h, t->stride[0]); MIX(h, t->stride[1]); MIX(h, t->stride[2]); MIX(h, t->pad_rows);
    MIX(h, t->bytes); MIX(h, t->weight); MIX(h, t->tp_rank); MIX(h, t->ndim); MIX(h, t->dtype);
  }
  for (uint32_t i = 0; i < p->n_ops; i++) {
    const rf_op *o = &p->ops[i];
    MIX(h, o->src); MIX(h, o->count); MIX(h, o->src_step);
    MIX(h, o->kind); MIX(h, o->src_dtype); MIX(h, o->dst_dtype);
    MIX(h, o->row0); MIX(h, o->col0); MIX(h, o->rows); MIX(h, o->cols);
    MIX(h, o->row_step); MIX(h, o->col_step);
    MIX(h, o->out); MIX(h, o->out_step); MIX(h, o->scale); MIX(h, o->scale_step);
    MIX(h, o->direct);
  }
  for (uint32_t i = 0; i < p->n_writes; i++) {
    const rf_write *w = &p->writes[i];
    MIX(h, w->slot); MIX(h, w->dst_off); MIX(h, w->len); MIX(h, w->receiver); MIX(h, w->dst);
    MIX(h, w->piece_first); MIX(h, w->piece_count);
  }
  for (uint32_t i = 0; i < p->n_groups; i++) {
    const rf_group *g = &p->groups[i];
    MIX(h, g->op_first); MIX(h, g->op_count); MIX(h, g->write_first); MIX(h, g->write_count);
    MIX(h, g->layer);
  }
  for (uint32_t i = 0; i < p->trainers; i++) {
    const rf_rank *r = &p->ranks[i];
    MIX(h, r->arena_bytes); MIX(h, r->bytes_out); MIX(h, r->shard); MIX(h, r->replicate);
    MIX(h, r->group_first); MIX(h, r->group_count); MIX(h, r->op_first); MIX(h, r->op_count);
    MIX(h, r->write_first); MIX(h, r->write_count);
  }
  for (uint32_t i = 0; i < p->receivers; i++) {
    const rf_receiver *r = &p->recv[i];
    MIX(h, r->bytes); MIX(h, r->replica); MIX(h, r->tp_rank); MIX(h, r->dst_first);
    MIX(h, r->dst_count); MIX(h, r->peer_first); MIX(h, r->peer_count);
  }
  for (uint32_t i = 0; i < p->n_peers; i++) {
    const rf_peer *q = &p->peers[i];
    MIX(h, q->bytes); MIX(h, q->trainer); MIX(h, q->writes);
  }
  for (uint32_t i = 0; i < p->n_derived; i++) {
    const rf_derived_tensor *t = &p->derived[i];
    h = mix_str(h, t->name);
    MIX(h, t->shape[0]); MIX(h, t->shape[1]); MIX(h, t->shape[2]);
    MIX(h, t->stride[0]); MIX(h, t->stride[1]); MIX(h, t->stride[2]); MIX(h, t->offset);
    MIX(h, t->bytes); MIX(h, t->storage); MIX(h, t->dst); MIX(h, t->tp_rank); MIX(h, t->ndim); MIX(h, t->dtype);
  }
  for (uint32_t i = 0; i < p->n_refresh; i++) {
    const rf_refresh *r = &p->refresh[i];
    MIX(h, r->kind); MIX(h, r->weight); MIX(h, r->scale); MIX(h, r->out0); MIX(h, r->out1);
    MIX(h, r->heads); MIX(h, r->qk_nope); MIX(h, r->v_head); MIX(h, r->kv_lora);
    MIX(h, r->tp_rank); MIX(h, r->layer);
  }
  for (uint32_t i = 0; i < p->n_pieces; i++) {
    const rf_piece *q = &p->pieces[i];
    MIX(h, q->src_off); MIX(h, q->off); MIX(h, q->len); MIX(h, q->src);
  }
  return h;
}

void rf_plan_predict(const rf_plan *p, const rf_time_model *m, rf_prediction *out)
{
  double rate = m->nic_gbps * m->nics_per_gpu * 1e9 / 8; /* bytes/s per GPU */
  *out = (rf_prediction){0};
  for (uint32_t t = 0; t < p->trainers; t++) {
    double s = p->ranks[t].bytes_out / rate + p->ranks[t].write_count * m->write_overhead_us * 1e-6;
    if (s > out->trainer_s) {
      out->trainer_s = s;
      out->worst_trainer = t;
    }
  }
  for (uint32_t r = 0; r < p->receivers; r++) {
    double s = p->recv[r].bytes / rate;
    if (s > out->receiver_s) {
      out->receiver_s = s;
      out->worst_receiver = r;
    }
  }
  out->lower_bound_s = out->receiver_s;
  out->bound_by_receiver = out->receiver_s >= out->trainer_s;
  out->seconds = (out->bound_by_receiver ? out->receiver_s : out->trainer_s) + m->done_rtt_us * 1e-6;
}
