package session

import (
	"fmt"
	"slices"

	"github.com/ephemera-network/ephemera/store"
)

// load reads every session and task. Tasks that were running when the
// router stopped are queued again: their miners' answers were never stored.
func (m *Manager) load() error {
	err := m.d.Store.View(func(txn *store.Txn) error {
		err := store.ScanJSON(txn, []byte(sessPrefix), func(k []byte, s Session, err error) error {
			if err != nil || s.ID == "" {
				m.log.Warn("dropping a damaged session", "key", string(k), "err", err)
				return nil
			}
			m.sessions[s.ID] = newWorker(m, s, nil)
			return nil
		})
		if err != nil {
			return err
		}
		return store.ScanJSON(txn, []byte(taskPrefix), func(k []byte, t Task, err error) error {
			if err != nil {
				m.log.Warn("dropping a damaged task", "key", string(k), "err", err)
				return nil
			}
			w, ok := m.sessions[t.Session]
			if !ok {
				return nil // its session was pruned before the task
			}
			lt := &liveTask{t: t, done: make(chan struct{})}
			if t.finished() {
				close(lt.done)
			} else {
				lt.t.State, lt.until = TaskQueued, m.now().Add(m.d.Config.QueueTimeout)
			}
			lt.publish()
			w.tasks[t.ID] = lt
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, w := range m.sessions {
		var waiting []*liveTask
		for _, lt := range w.tasks {
			if !lt.t.finished() {
				waiting = append(waiting, lt)
			}
		}
		slices.SortFunc(waiting, func(a, b *liveTask) int { return a.t.Seq - b.t.Seq })
		if w.s.State == StateOpen {
			w.queue = waiting
			m.queued.Add(int64(len(waiting)))
		}
		w.publish()
	}
	return nil
}

// save writes lt (if not nil) and, if session, the session, in one synced
// transaction: a task's count in its session never disagrees with the
// tasks stored. It runs on the worker.
func (w *worker) save(lt *liveTask, session bool) error {
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	s := w.s
	s.Queued = len(w.queue)
	err := w.m.d.Store.Update(func(txn *store.Txn) error {
		if lt != nil {
			if err := store.PutJSON(txn, taskKey(lt.t.Session, lt.t.ID), lt.t); err != nil {
				return err
			}
		}
		if !session {
			return nil
		}
		return store.PutJSON(txn, sessKey(s.ID), s)
	})
	if err != nil {
		return fmt.Errorf("store session %s: %w", s.ID, err)
	}
	return nil
}

func (w *worker) saveSessionLogged() {
	if err := w.save(nil, true); err != nil {
		w.m.log.Error("store session", "session", w.id, "err", err)
	}
}
