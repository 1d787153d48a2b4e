"""Float64 NumPy reference of the JSNet loss, written from the paper's formulas with plain loops
over blocks, instances, points and pairs; it shares no code with `jsnet_tf.losses`.

Per block with M instances (instance m: points n, embeddings e_n, mean mu_m), L1 distances:
  (3) L_pull = 1/M sum_m 1/N_m sum_n max(0, |mu_m - e_n|_1 - delta_v)^2
  (4) L_push = 1/(M(M-1)) sum_{i != j} max(0, 2 delta_d - |mu_i - mu_j|_1)^2  (0 when M == 1)
"""

import numpy as np


def block_losses(embeddings, labels, delta_v=0.5, delta_d=1.5):
    """One block: (N, E), (N,) -> (L_pull, L_push) as Python floats."""
    embeddings = np.asarray(embeddings, np.float64)
    instances = sorted(set(np.asarray(labels).tolist()))
    means = []
    pull = 0.0
    for instance in instances:
        members = [embeddings[n] for n in range(len(labels)) if labels[n] == instance]
        mean = sum(members) / len(members)
        means.append(mean)
        total = 0.0
        for e in members:
            total += max(0.0, float(np.sum(np.abs(mean - e))) - delta_v) ** 2
        pull += total / len(members)
    pull /= len(instances)
    push = 0.0
    pairs = 0
    for i, mu_i in enumerate(means):
        for j, mu_j in enumerate(means):
            if i != j:
                push += max(0.0, 2.0 * delta_d - float(np.sum(np.abs(mu_i - mu_j)))) ** 2
                pairs += 1
    push = push / pairs if pairs else 0.0
    return pull, push


def discriminative_loss(embeddings, labels, delta_v=0.5, delta_d=1.5, param_var=1.0, param_dist=1.0):
    """(B, N, E), (B, N) -> (disc, l_var, l_dist), each the mean over the blocks."""
    pulls, pushes = zip(*(block_losses(e, l, delta_v, delta_d) for e, l in zip(embeddings, labels)))
    l_var = param_var * sum(pulls) / len(pulls)
    l_dist = param_dist * sum(pushes) / len(pushes)
    return l_var + l_dist, l_var, l_dist


def semantic_loss(logits, labels, weights=None):
    """Cross entropy -log softmax(logits)[label]; mean over points, or sum(w * loss) / #(w != 0)."""
    logits = np.asarray(logits, np.float64)
    losses = []
    for b in range(logits.shape[0]):
        for n in range(logits.shape[1]):
            z = logits[b, n]
            top = np.max(z)
            log_softmax = z - top - np.log(np.sum(np.exp(z - top)))
            losses.append(-log_softmax[labels[b, n]])
    losses = np.array(losses)
    if weights is None:
        return float(np.mean(losses))
    w = np.broadcast_to(np.asarray(weights, np.float64), labels.shape).reshape(-1)
    nonzero = np.count_nonzero(w)
    return float(np.sum(w * losses) / nonzero) if nonzero else 0.0
