"""Audio-only render of the crema corpus plan for N actors (issue 11 diagnostic):
    python audio_scale_render.py 91 82 audio91x82.npz [workers]"""
import sys, time, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from multiprocessing import Pool
from edge_ladder.corpus_crema import plan_clips, clip_cues, render_audio, FIRST_ACTOR
from edge_ladder.frontend import log_mel
from edge_ladder import EMOTIONS
n_actors, per_actor, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def one(task):
    actor, sentence, emotion, level = task
    cues = clip_cues(0, actor, sentence, emotion, level)["cues"]
    pcm = render_audio(0, actor, sentence, emotion, level, cues)[0]
    return actor, EMOTIONS.index(emotion), f"{actor}_{sentence}_{emotion}_{level}", log_mel(pcm).astype(np.float16)
if __name__ == "__main__":
    plan = plan_clips(range(FIRST_ACTOR, FIRST_ACTOR + n_actors), per_actor, 0)
    t0 = time.time()
    with Pool(int(sys.argv[4]) if len(sys.argv) > 4 else 2) as p:
        rows = p.map(one, plan, chunksize=8)
    print(len(rows), "clips", f"{time.time()-t0:.0f}s")
    np.savez(out, actor=np.array([r[0] for r in rows]), label=np.array([r[1] for r in rows]),
             ids=np.array([r[2] for r in rows]), lengths=np.array([len(r[3]) for r in rows]),
             audio=np.concatenate([r[3] for r in rows]))
