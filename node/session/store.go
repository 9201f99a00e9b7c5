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
			m.sessions[s.ID] = &live{s: s, tasks: map[string]*liveTask{}, wake: make(chan struct{}, 1)}
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
			l, ok := m.sessions[t.Session]
			if !ok {
				return nil // its session was pruned before the task
			}
			lt := &liveTask{t: t, done: make(chan struct{})}
			if t.finished() {
				close(lt.done)
			} else {
				lt.t.State = TaskQueued
			}
			l.tasks[t.ID] = lt
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, l := range m.sessions {
		var waiting []*liveTask
		for _, lt := range l.tasks {
			if !lt.t.finished() {
				waiting = append(waiting, lt)
			}
		}
		slices.SortFunc(waiting, func(a, b *liveTask) int { return a.t.Seq - b.t.Seq })
		if l.s.State == StateOpen {
			l.queue = waiting
			m.queued += len(waiting)
		}
		l.s.Queued = len(l.queue)
	}
	return nil
}

// saveSession writes the session as it is now, one synced write.
func (m *Manager) saveSession(l *live) error { return m.save(l, nil, true) }

// saveTask writes the task as it is now, one synced write.
func (m *Manager) saveTask(l *live, lt *liveTask) error { return m.save(l, lt, false) }

// saveBoth writes a task and its session together, in one synced
// transaction: a task's count in its session never disagrees with the
// tasks stored.
func (m *Manager) saveBoth(l *live, lt *liveTask) error { return m.save(l, lt, true) }

// save writes lt (if not nil) and, if session, l's session, in one synced
// transaction.
func (m *Manager) save(l *live, lt *liveTask, session bool) error {
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	m.mu.Lock()
	s := l.view()
	var t Task
	if lt != nil {
		t = cloneTask(lt.t)
	}
	m.mu.Unlock()
	s.MeanAgreement = nil
	err := m.d.Store.Update(func(txn *store.Txn) error {
		if lt != nil {
			if err := store.PutJSON(txn, taskKey(t.Session, t.ID), t); err != nil {
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
